"""One module per page of the main window; each page takes the EngineBridge and nothing else."""
