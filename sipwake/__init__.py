"""sipwake: keeps a mobile dialer reachable while its app sleeps."""
