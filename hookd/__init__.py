"""hookd: webhook delivery from a transactional PostgreSQL outbox."""

__version__ = "0.1.0"
