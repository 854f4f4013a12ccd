"""The lowest floor: plugin parameters, the interfaces, the hook contract and the registry.

Nothing here imports from the floors above (spec, train, nn, io, testing, cli).
"""
