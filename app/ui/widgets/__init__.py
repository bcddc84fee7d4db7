"""Reusable widgets: state badge, live chart, coverage bar, message bar, banners, dialogs."""
