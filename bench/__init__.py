"""Measurements (not tests): latency of one question through each path."""
