"""The objective: weighted loss terms, the features they read, the adapters between them."""
