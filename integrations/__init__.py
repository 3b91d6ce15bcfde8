"""Integrations of fraudops with the payment platforms its merchants use."""
