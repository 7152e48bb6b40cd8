"""Writers for masks, reports and the run manifest. Every file is written atomically."""
