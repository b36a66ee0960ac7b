"""Policies written in Python that ship with the library (importing registers them)."""

from policies.builtin.bandit import BanditPolicy

__all__ = ["BanditPolicy"]
