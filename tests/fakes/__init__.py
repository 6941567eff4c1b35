"""Fakes of outside services: real HTTP servers on loopback."""
