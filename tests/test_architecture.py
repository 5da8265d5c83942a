import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_packages_keep_the_import_contracts():
    """features <- models <- db <- {training, serving} <- cli, and recs and pricing
    independent of each other (the import-linter contracts of pyproject.toml)."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_feature_repository_has_no_side_effects_on_import(tmp_path):
    """Feast imports the definitions to apply them: importing must write nothing."""
    code = "import features.feature_repo.definitions, features.store"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, env={"TAILOR_DATA_DIR": str(tmp_path / "data")})
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []
