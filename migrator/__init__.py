"""Move Segment Unify profiles into Voucherify customers."""
