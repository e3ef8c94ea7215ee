"""Image records, streamed upload with checksums, and the stores that hold image data."""
