"""Readers of the operating system (/proc, git, Python environments, GPUs); they never decide."""
