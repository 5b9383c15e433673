"""Presenting: the HTML report (its CSS and JS as package data), plots, widgets, text."""
