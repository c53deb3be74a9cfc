"""Tools that check pyrostore from outside the store."""
