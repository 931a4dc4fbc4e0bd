"""Integration tests: the adapters against real servers (SeaweedFS, the local SpeechKit)."""
