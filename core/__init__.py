"""Shared infrastructure below every package (api, export, tools, loadtests, the Triton image):
today the settings."""
