"""DICOM storage SOP classes that carry no image: the only objects a read may file as ``skipped``.

An explicit list, by pydicom's public UID keywords (a misspelt keyword fails at import). Every
class not listed is treated as an image class, so an image object without complete Pixel Data,
or a file whose SOP class cannot be read, is quarantined, never skipped. RT Dose, Segmentation,
Parametric Map and RT Image carry pixels and are deliberately absent.
"""

from __future__ import annotations

import pydicom.uid

_NON_IMAGE_KEYWORDS = (
    # structured reports, key object selection, procedure log
    "BasicTextSRStorage",
    "EnhancedSRStorage",
    "ComprehensiveSRStorage",
    "Comprehensive3DSRStorage",
    "ExtensibleSRStorage",
    "ProcedureLogStorage",
    "MammographyCADSRStorage",
    "ChestCADSRStorage",
    "ColonCADSRStorage",
    "KeyObjectSelectionDocumentStorage",
    "XRayRadiationDoseSRStorage",
    "EnhancedXRayRadiationDoseSRStorage",
    "RadiopharmaceuticalRadiationDoseSRStorage",
    "PatientRadiationDoseSRStorage",
    "ImplantationPlanSRStorage",
    "AcquisitionContextSRStorage",
    "SimplifiedAdultEchoSRStorage",
    "PlannedImagingAgentAdministrationSRStorage",
    "PerformedImagingAgentAdministrationSRStorage",
    "WaveformAnnotationSRStorage",
    # radiotherapy objects without pixels (RT Dose and RT Image carry pixels: not here)
    "RTStructureSetStorage",
    "RTPlanStorage",
    "RTIonPlanStorage",
    "RTBeamsTreatmentRecordStorage",
    "RTBrachyTreatmentRecordStorage",
    "RTTreatmentSummaryRecordStorage",
    "RTIonBeamsTreatmentRecordStorage",
    "RTPhysicianIntentStorage",
    "RTSegmentAnnotationStorage",
    "RTRadiationSetStorage",
    "CArmPhotonElectronRadiationStorage",
    "TomotherapeuticRadiationStorage",
    "RoboticArmRadiationStorage",
    "RTRadiationRecordSetStorage",
    "RTRadiationSalvageRecordStorage",
    "TomotherapeuticRadiationRecordStorage",
    "CArmPhotonElectronRadiationRecordStorage",
    "RoboticRadiationRecordStorage",
    "RTRadiationSetDeliveryInstructionStorage",
    "RTTreatmentPreparationStorage",
    "RTPatientPositionAcquisitionInstructionStorage",
    "RTBeamsDeliveryInstructionStorage",
    "RTBrachyApplicationSetupDeliveryInstructionStorage",
    # presentation states
    "GrayscaleSoftcopyPresentationStateStorage",
    "ColorSoftcopyPresentationStateStorage",
    "PseudoColorSoftcopyPresentationStateStorage",
    "BlendingSoftcopyPresentationStateStorage",
    "XAXRFGrayscaleSoftcopyPresentationStateStorage",
    "GrayscalePlanarMPRVolumetricPresentationStateStorage",
    "CompositingPlanarMPRVolumetricPresentationStateStorage",
    "AdvancedBlendingPresentationStateStorage",
    "VolumeRenderingVolumetricPresentationStateStorage",
    "SegmentedVolumeRenderingVolumetricPresentationStateStorage",
    "MultipleVolumeRenderingVolumetricPresentationStateStorage",
    "VariableModalityLUTSoftcopyPresentationStateStorage",
    "BasicStructuredDisplayStorage",
    # waveforms and audio
    "TwelveLeadECGWaveformStorage",
    "GeneralECGWaveformStorage",
    "AmbulatoryECGWaveformStorage",
    "General32bitECGWaveformStorage",
    "HemodynamicWaveformStorage",
    "CardiacElectrophysiologyWaveformStorage",
    "BasicVoiceAudioWaveformStorage",
    "GeneralAudioWaveformStorage",
    "ArterialPulseWaveformStorage",
    "RespiratoryWaveformStorage",
    "MultichannelRespiratoryWaveformStorage",
    "RoutineScalpElectroencephalogramWaveformStorage",
    "ElectromyogramWaveformStorage",
    "ElectrooculogramWaveformStorage",
    "SleepElectroencephalogramWaveformStorage",
    "BodyPositionWaveformStorage",
    # encapsulated documents and models
    "EncapsulatedPDFStorage",
    "EncapsulatedCDAStorage",
    "EncapsulatedSTLStorage",
    "EncapsulatedOBJStorage",
    "EncapsulatedMTLStorage",
    # raw data, registration, fiducials, surfaces, tractography, spectroscopy, value mappings
    "RawDataStorage",
    "SpatialRegistrationStorage",
    "DeformableSpatialRegistrationStorage",
    "SpatialFiducialsStorage",
    "SurfaceSegmentationStorage",
    "SurfaceScanMeshStorage",
    "SurfaceScanPointCloudStorage",
    "TractographyResultsStorage",
    "MRSpectroscopyStorage",
    "RealWorldValueMappingStorage",
    "StereometricRelationshipStorage",
    "ContentAssessmentResultsStorage",
    "MicroscopyBulkSimpleAnnotationsStorage",
    # ophthalmic measurements and reports
    "LensometryMeasurementsStorage",
    "AutorefractionMeasurementsStorage",
    "KeratometryMeasurementsStorage",
    "SubjectiveRefractionMeasurementsStorage",
    "VisualAcuityMeasurementsStorage",
    "SpectaclePrescriptionReportStorage",
    "OphthalmicAxialMeasurementsStorage",
    "IntraocularLensCalculationsStorage",
    "MacularGridThicknessAndVolumeReportStorage",
    "OphthalmicVisualFieldStaticPerimetryMeasurementsStorage",
    # protocols, templates, palettes, hanging protocols, inventories, DICOMDIR, DICOS non-image objects
    "CTDefinedProcedureProtocolStorage",
    "CTPerformedProcedureProtocolStorage",
    "ProtocolApprovalStorage",
    "XADefinedProcedureProtocolStorage",
    "XAPerformedProcedureProtocolStorage",
    "GenericImplantTemplateStorage",
    "ImplantAssemblyTemplateStorage",
    "ImplantTemplateGroupStorage",
    "HangingProtocolStorage",
    "ColorPaletteStorage",
    "InventoryStorage",
    "MediaStorageDirectoryStorage",
    "DICOSThreatDetectionReportStorage",
    "DICOSQuadrupoleResonanceStorage",
)

#: Retired classes pydicom has no keyword for (UID: name, as in pydicom's UID registry).
_RETIRED_NON_IMAGE = {
    "1.2.840.10008.5.1.1.27": "Stored Print Storage SOP Class",
    "1.2.840.10008.5.1.4.1.1.8": "Standalone Overlay Storage",
    "1.2.840.10008.5.1.4.1.1.9": "Standalone Curve Storage",
    "1.2.840.10008.5.1.4.1.1.9.1": "Waveform Storage - Trial",
    "1.2.840.10008.5.1.4.1.1.10": "Standalone Modality LUT Storage",
    "1.2.840.10008.5.1.4.1.1.11": "Standalone VOI LUT Storage",
    "1.2.840.10008.5.1.4.1.1.88.1": "Text SR Storage - Trial",
    "1.2.840.10008.5.1.4.1.1.88.2": "Audio SR Storage - Trial",
    "1.2.840.10008.5.1.4.1.1.88.3": "Detail SR Storage - Trial",
    "1.2.840.10008.5.1.4.1.1.88.4": "Comprehensive SR Storage - Trial",
    "1.2.840.10008.5.1.4.1.1.129": "Standalone PET Curve Storage",
    "1.2.840.10008.5.1.4.34.1": "RT Beams Delivery Instruction Storage - Trial",
}

NON_IMAGE_SOP_CLASSES: frozenset[str] = frozenset(
    [str(getattr(pydicom.uid, keyword)) for keyword in _NON_IMAGE_KEYWORDS] + list(_RETIRED_NON_IMAGE)
)


def is_non_image_class(sop_class_uid: str) -> bool:
    """Whether objects of this SOP class are known to carry no image (SR, RT plan, KOS, ...)."""
    return str(sop_class_uid).strip() in NON_IMAGE_SOP_CLASSES
