"""Test helpers shared across the test folders: the scripted model server, daemons as subprocesses, generated
pages and raw files, the web world, the systemd listener and the sandbox."""
