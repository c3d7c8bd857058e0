"""segkit: semantic and instance segmentation for the CS 498 MP4 assignment, as a package."""

__version__ = "0.1.0"
