"""WebSocket transports: Twilio Media Streams, Exotel, the generic protocol, the widget."""
