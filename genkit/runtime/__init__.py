"""The process and the machine: torch.distributed glue, memory available."""
