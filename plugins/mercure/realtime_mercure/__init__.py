"""The Mercure protocol (draft-dunglas-mercure-07) as a realtime plugin: a hub at
``/.well-known/mercure`` for EventSource subscribers and HTTP publishers."""
