"""Kommo: the client and its OAuth, webhook parsing and intake, the job queue, deal rooms and reconciliation."""
