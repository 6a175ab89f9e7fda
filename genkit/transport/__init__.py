"""Transport from noise to images outside any network: the straight path, guidance, ODE solvers."""
