"""Small, download-free example models shared by the notebooks, the README demo and the tests."""
