"""Rendering and delivery of the email digest."""
