"""Training the bundled demo model, and rendering its sample grid."""
