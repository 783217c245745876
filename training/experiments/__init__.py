"""Reproductions: slow experiments run as commands, each writing a table."""
