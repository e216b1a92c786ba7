# LiveDlrm build entry point for Windows hosts (mirrors build.sh; same verbs):
#   run | test | cli ARGS... | bench [NAME] | build | clean
# Native parts are built with CMake and the host C compiler (MSVC or clang-cl); UPMEM and libnuma/hwloc are
# Linux-only and report "unavailable" here. Not exercised by CI (which runs build.sh on Debian 12).
param([Parameter(Position = 0)][string]$Verb = "help", [Parameter(ValueFromRemainingArguments = $true)][string[]]$Rest = @())
$ErrorActionPreference = "Stop"
$Root = $PSScriptRoot
Set-Location $Root
$env:DOTNET_CLI_TELEMETRY_OPTOUT = "1"; $env:DOTNET_NOLOGO = "1"
$Config = if ($env:CONFIG) { $env:CONFIG } else { "Release" }
$NativeBuild = Join-Path $Root "artifacts/native/build"
$NativeLib = Join-Path $Root "artifacts/native/lib"
$CliDll = Join-Path $Root "engine/LiveDlrm.Cli/bin/$Config/net10.0/livedlrm.dll"

function Ensure-System {
  if (-not (Get-Command dotnet -ErrorAction SilentlyContinue)) { throw "the .NET 10 SDK is required (dotnet not on PATH)" }
  if (-not (Get-Command cmake -ErrorAction SilentlyContinue)) { throw "CMake is required for native/ (winget install Kitware.CMake)" }
}
function Build-Native {
  Write-Host "==> native (CMake)"
  cmake -S native -B $NativeBuild -DCMAKE_BUILD_TYPE=Release "-DLIVEDLRM_LIB_DIR=$NativeLib" | Out-Null
  if ($LASTEXITCODE -ne 0) { throw "cmake configure failed" }
  cmake --build $NativeBuild --config Release
  if ($LASTEXITCODE -ne 0) { throw "native build failed" }
}
function Build-Managed {
  Write-Host "==> dotnet build ($Config)"
  dotnet build LiveDlrm.slnx -c $Config -nologo -v:q
  if ($LASTEXITCODE -ne 0) { throw "dotnet build failed" }
}
function Build-All { Ensure-System; Build-Native; Build-Managed }

function Run-Tests {
  Build-All
  $results = Join-Path $Root "artifacts/test"
  if (Test-Path $results) { Remove-Item -Recurse -Force $results }
  dotnet test LiveDlrm.slnx -c $Config --no-build -nologo --logger "trx;LogFileName=tests.trx" --logger "console;verbosity=normal" --results-directory $results @Rest
  $rc = $LASTEXITCODE
  $passed = 0; $failed = 0; $skipped = 0; $total = 0
  foreach ($trx in Get-ChildItem -Recurse -Filter *.trx $results) {
    $c = ([xml](Get-Content $trx.FullName)).TestRun.ResultSummary.Counters
    $passed += [int]$c.passed; $failed += [int]$c.failed + [int]$c.error + [int]$c.timeout + [int]$c.aborted
    $skipped += [int]$c.notExecuted; $total += [int]$c.total
  }
  if ($total -eq 0 -and $rc -eq 0) { $rc = 1 }
  if ($rc -ne 0 -and $failed -eq 0) { $failed = 1 }
  $line = "$passed passed, $failed failed"
  if ($skipped -gt 0) { $line += ", $skipped skipped" }
  Write-Output $line
  if ($failed -gt 0 -or $rc -ne 0) { exit 1 }
}

switch ($Verb) {
  "run"   { Build-All; dotnet $CliDll demo @Rest; exit $LASTEXITCODE }
  "test"  { Run-Tests }
  "cli"   { if (-not (Test-Path $CliDll)) { Build-All }; dotnet $CliDll @Rest; exit $LASTEXITCODE }
  "bench" { Build-All; dotnet (Join-Path $Root "perf/LiveDlrm.Perf/bin/$Config/net10.0/LiveDlrm.Perf.dll") @Rest; exit $LASTEXITCODE }
  "build" { Build-All }
  "clean" { Remove-Item -Recurse -Force -ErrorAction SilentlyContinue artifacts; Get-ChildItem -Recurse -Directory -Include bin, obj engine, interop, tests, perf | Remove-Item -Recurse -Force }
  default { Get-Content $PSCommandPath -TotalCount 4 | Select-Object -Skip 1 | ForEach-Object { $_ -replace '^# ?', '' }; if ($Verb -ne "help") { exit 2 } }
}
