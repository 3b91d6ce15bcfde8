"""The Stripe integration: signed webhooks (payments scored, disputes and early fraud
warnings as labels) and an inline decision endpoint for checkouts."""
