"""Projects, users, roles, tokens (Fernet), application credentials."""
