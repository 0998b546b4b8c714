"""``python -m exporter.fakeapi``: the fake vendor API's command."""

from exporter.fakeapi.command import main

if __name__ == "__main__":
    raise SystemExit(main())
