"""Our own AWS state: the meetings table and the secrets. Imports only the core."""
