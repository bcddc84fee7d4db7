"""The volunteer's wallet: secp256k1 keys (``keys``), the keystore in the OS keyring or an
encrypted file (``keystore``, ``sealed``), the recovery phrase (``phrase``) and the ``Wallet``
facade over the ledger (``wallet``). Errors are in ``errors``; none of them carries key material."""
