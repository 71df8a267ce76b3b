"""The fault suite: each attack on Slipway's data-safety promises, kept as a test."""
