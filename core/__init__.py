"""The core layer: what every other package stands on. It imports nothing above itself."""
