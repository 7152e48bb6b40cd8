"""Pure data layer: decode files into records, read labels, transforms, synthetic archives."""
