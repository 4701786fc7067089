"""The browser chat client and the API viewer: pages, their assets, their security policy."""
