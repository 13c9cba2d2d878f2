"""Workspaces: the tenant, its members and their roles."""
