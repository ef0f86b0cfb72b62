"""Test helpers that stand in for the outside world: HTTP receivers and a breakable TCP path.

Nothing here mocks hookd's own parts; each helper is a real server on loopback.
"""
