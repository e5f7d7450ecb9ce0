"""Kopf handlers: thin, each hands off to a pure decision and carries out its plan."""
