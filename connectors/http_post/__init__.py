"""Generic HTTP target: POST each operation's payload as JSON to a URL."""
