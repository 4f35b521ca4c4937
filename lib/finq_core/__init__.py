"""What the API and the workers share: settings, the task store and the broker."""
