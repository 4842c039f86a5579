"""SSH to devices — the only package that imports paramiko.

``connection`` (:class:`~edgeprune.devices.transport.connection.Connection`: commands, SFTP,
reconnects) over ``connect`` (opening a client), ``hostkeys`` (known-hosts file and policy),
``identity`` (key files), ``commands`` (quoting and the ``sh`` wrapper that reports PID and exit
status) and the private ``_retry`` (the link guard and its internal signals).
"""
