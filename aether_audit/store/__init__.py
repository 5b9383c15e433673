"""The store: the async store, its sync facade, broadcasting, scenarios."""
