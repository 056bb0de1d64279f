"""Plumbing every wing stands on: settings, errors, HTTP retries, API answers, observability. Imports no peer."""
