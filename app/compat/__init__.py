"""Endpoints that speak other APIs' contracts: the seed's `/api/v1/chat` and OpenAI's."""
