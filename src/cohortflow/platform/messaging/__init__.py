"""Messages that leave the platform: templates, channels (webhook, email), campaigns, Canvas and the worker."""
