; Inno Setup 6 script for the NeuroShard Node installer (Windows x64).
; packaging/build.py compiles it on Windows after the frozen bundle passed its smoke tests:
;   ISCC.exe /DAppVersion=0.1.0 /DAppVersionNumeric=0.1.0.0 /DSourceDir=dist\NeuroShard
;            /DOutputDir=dist /DOutputBaseFilename=NeuroShard-0.1.0-windows-amd64-cpu-setup
;            /DIconFile=build\packaging\neuroshard.ico packaging\windows\neuroshard.iss
; The version comes from pyproject.toml through build.py; nothing here needs editing per release.
;
; Per-user install by default (no administrator prompt: volunteers often lack admin rights);
; the dialog still offers an all-users install. App data (wallet, ledger, checkpoints) lives in
; %LOCALAPPDATA%\neuroshard (platformdirs), never under {app}, so upgrading or uninstalling
; leaves it alone.

#ifndef AppVersion
  #error Pass /DAppVersion=<version from pyproject.toml>
#endif
#ifndef AppVersionNumeric
  #define AppVersionNumeric AppVersion
#endif
#ifndef SourceDir
  #define SourceDir "..\..\dist\NeuroShard"
#endif
#ifndef OutputDir
  #define OutputDir "..\..\dist"
#endif
#ifndef OutputBaseFilename
  #define OutputBaseFilename "NeuroShard-" + AppVersion + "-setup"
#endif
#ifndef IconFile
  #define IconFile "..\..\build\packaging\neuroshard.ico"
#endif

#define AppName "NeuroShard"
#define AppExeName "NeuroShard.exe"
#define RunKey "Software\Microsoft\Windows\CurrentVersion\Run"
#define ApprovedKey "Software\Microsoft\Windows\CurrentVersion\Explorer\StartupApproved\Run"

[Setup]
; The AppId ties every release together, so a new installer upgrades the old one in place.
; Never change it.
AppId={{7E0C7B1E-4B1D-4C55-9C57-2F6A3E0D5A11}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=NeuroShard volunteers
VersionInfoVersion={#AppVersionNumeric}
VersionInfoProductName={#AppName}
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
SetupIconFile={#IconFile}
UninstallDisplayIcon={app}\{#AppExeName}
UninstallDisplayName={#AppName}
OutputDir={#OutputDir}
OutputBaseFilename={#OutputBaseFilename}
; torch dominates the ~800 MB folder; lzma2 solid compression brings it to roughly a quarter.
Compression=lzma2/max
SolidCompression=yes
; Two block threads suit the 4-core hosted runners (two match-finder threads each).
LZMANumBlockThreads=2
WizardStyle=modern
; Restart Manager closes a running NeuroShard before its files are replaced, and reopens it.
CloseApplications=yes
RestartApplications=yes
MinVersion=10.0

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[InstallDelete]
; PyInstaller's _internal folder changes between releases; stale DLLs from an older torch or Qt
; left beside new ones can be loaded by mistake, so clear it before copying the new one.
Type: filesandordirs; Name: "{app}\_internal"

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExeName}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExeName}"; Tasks: desktopicon

[Run]
Filename: "{app}\{#AppExeName}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[Code]
// Start-at-login is the app's own setting (HKCU Run value written by autostart.py); an
// uninstall must not leave it pointing at a deleted executable. Data is kept on purpose.
procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
begin
  if CurUninstallStep = usPostUninstall then
  begin
    RegDeleteValue(HKEY_CURRENT_USER, '{#RunKey}', '{#AppName}');
    RegDeleteValue(HKEY_CURRENT_USER, '{#ApprovedKey}', '{#AppName}');
  end;
end;
