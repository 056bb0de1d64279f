"""Chat: the slash-command grammar and the platform adapters (Mattermost today)."""
