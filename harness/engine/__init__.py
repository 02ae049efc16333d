"""The training engine: device-resident data, backbones and the training loop."""
