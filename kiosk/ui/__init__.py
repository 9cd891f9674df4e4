"""The touchscreen UI (Kivy): the only package that imports kivy."""
