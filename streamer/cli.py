def main() -> None:
    print("hpmf")
